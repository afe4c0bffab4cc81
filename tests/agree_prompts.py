"""Prompts of each answer kind for the agreement tests (written for this project)."""

FOUR = ("Which metal is liquid at room temperature?\nA) iron\nB) mercury\nC) copper\nD) zinc\n"
        "Print only a single choice from \"A\" or \"B\" or \"C\" or \"D\" without explanation.\nAnswer:")
TWO = ("Maya lent her umbrella to Tom because _ was going out into the rain.\nA) Maya\nB) Tom\n"
       "Print only a single choice from \"A\" or \"B\" without explanation. Answer:")
MATH = "A baker sells 12 boxes of 6 rolls and 3 single rolls. How many rolls does she sell?"
CODE = "Write a function that returns the largest of three numbers."
