# evaluate stage (see docs/design.md)
