"""BBN: the bilateral-branch ResNet (filled in by the BBN work)."""
