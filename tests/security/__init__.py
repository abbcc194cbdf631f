"""Proof under bad input, faults and attack: schemathesis, fuzzing, forgery, crash safety and a soak."""
