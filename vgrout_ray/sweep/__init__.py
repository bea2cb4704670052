"""Sweeps: arms × seeds as concurrent runs on one cluster (``runner``) and their one comparison
(``report``)."""
