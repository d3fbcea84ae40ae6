"""Who the caller is: accounts and their members, password hashes, access tokens, login throttling."""
