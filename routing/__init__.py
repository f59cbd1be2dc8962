"""Call routing: local services first, then priority-ordered Call Routing Rules. Pure."""
