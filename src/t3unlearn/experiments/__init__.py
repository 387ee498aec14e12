"""Experiments: the drivers that run several methods on a benchmark and tabulate them.

- :mod:`.compare`: ``t3unlearn compare`` (every LM method of the registry on a world or TOFU split);
- :mod:`.sequential`: ``t3unlearn sequential`` (deletion requests one after another);
- :mod:`.images`: ``t3unlearn images compare`` (the image methods on the augmented-digits benchmark).

They sit above the methods and the evaluation, below the command line.
"""
