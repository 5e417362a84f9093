"""govhost control plane: pure core (load, validate, place, render, plan) and effectful shell."""
