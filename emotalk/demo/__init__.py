"""``emotalk demo``: the whole pipeline end to end on an offline CPU machine, with an HTML report."""
