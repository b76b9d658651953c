"""Names the magics give to variables of the user's namespace."""

from __future__ import annotations

__all__ = ["ANSWER_TEXT", "BATCH_ANSWERS", "CELL_ERRORS", "FIGURES"]

# Where an answer goes when a cell fails after the service answered: the text of an answer
# that is not in the format asked for, and the answers of a batch with failed items.
ANSWER_TEXT = "_pizza_answer"
BATCH_ANSWERS = "_pizza_batch"
# The errors of earlier cells, for {Err[n]} in questions (see cell_errors).
CELL_ERRORS = "Err"
# The images cells displayed, for {Fig[-1]} in questions (see images).
FIGURES = "Fig"
