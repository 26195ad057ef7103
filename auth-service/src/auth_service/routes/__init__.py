"""HTTP routes of the auth service (thin: translate HTTP, call services/)."""
