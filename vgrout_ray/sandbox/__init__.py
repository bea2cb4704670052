"""Sandboxes that run untrusted programs: the warm runner and its process / docker backends."""
