"""The student's side of Invigil: the page a student opens from their link."""
