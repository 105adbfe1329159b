"""Layer 6: text (ULMFiT)."""
