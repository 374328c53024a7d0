"""CasP-lite: cascaded correspondence priors for semi-dense matching (model, loss, training)."""
