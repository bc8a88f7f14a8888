"""Will a recipe fit a GPU? Its memory estimated from the base's config alone (no weights, no data), line by line,
with the changes that make it fit (`peftkit plan`).

config (config.json without weights) -> inventory (parameters by storage) -> weights / activations -> estimate
(the breakdown and the peak) -> cards (which common sizes it fits) and advice (what to change).
"""
