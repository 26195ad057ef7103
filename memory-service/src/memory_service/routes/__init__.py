"""HTTP routes of the memory service (thin: translate HTTP, call services/)."""
