"""Training data and trainer of the router's complexity head (not shipped in the router image).

python -m tuneroute_router_training.train_head [--out router-image/tuneroute_router/head.json]
"""
