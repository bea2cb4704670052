"""Model side: tiny offline model, SVD cache, δS adapter."""
