"""OLTR: modulated attention and the dynamic meta-embedding (filled in by the OLTR work)."""
