from v60k.cli import main

main()
