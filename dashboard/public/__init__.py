"""The public side: a separate Dash/Flask app (map page and Open311 API) on the public role, no login."""
