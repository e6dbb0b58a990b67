"""The stylised face: a procedural torch drawing (signed distance fields, layered)."""
