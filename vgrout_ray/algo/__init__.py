"""Pure learner math: loss, erase/route projection, route2 gate, v_hack extraction, pairs."""
