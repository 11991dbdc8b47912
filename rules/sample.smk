# sample stage (see docs/design.md)
