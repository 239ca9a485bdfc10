"""Model backends behind small interfaces: ``asr`` (speech recognition), ``diarization``, ``llm``.

Each job has one interface and adapters behind it; heavy libraries (faster-whisper, whisperx, pyannote,
torch, openai) are imported inside the adapters only, so importing ``v60k`` stays light.
"""
