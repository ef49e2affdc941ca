"""Tasks: each one composes data, models, losses and the engine into a command
(``ssl`` pretraining methods, ``seg`` MDP, ``vos`` SSL-UVOS, ``dit`` DiT training)."""
