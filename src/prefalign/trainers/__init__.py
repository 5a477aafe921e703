"""Trainers: the shared loop (`loop`) and one package per method, each saying what a batch is and
what its loss is. Trainers stand on the engine; they never import `eval` or each other."""
