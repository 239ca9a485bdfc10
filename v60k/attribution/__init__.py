"""Who a speaker is: the evidence checks behind the attribute stage and its scoring against reference turns."""
