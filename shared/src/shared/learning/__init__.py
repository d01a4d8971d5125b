"""The learning loop (issue 17): model lines, feedback datasets, generations, the gate."""
