"""Site requests: a unit without a site asks for one; an operator approves or returns it."""
