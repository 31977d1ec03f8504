"""Content safety: the moderation categories, the classifier that scores them, and the policies that act on
the scores (docs/safety.md)."""
