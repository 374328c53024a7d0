"""HomoMatcher: sub-pixel matches from patch-to-patch homographies (model, training)."""
