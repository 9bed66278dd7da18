"""People and machines that call cairn: users, API tokens, and what each may do."""
