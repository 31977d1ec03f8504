"""Usage and cost: prices per model, and the buffered recorder of every request's usage."""
