"""Self-supervised / semi-supervised pretraining: the methods and their run functions."""
