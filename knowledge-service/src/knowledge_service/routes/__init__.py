"""HTTP routes of the knowledge service (thin: translate HTTP, call services/)."""
