"""`prefalign rm train`: a scalar reward model on preference pairs (Bradley–Terry)."""
