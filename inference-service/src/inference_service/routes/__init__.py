"""HTTP routes of the inference service (thin: translate HTTP, call services/)."""
