# judge stage (see docs/design.md)
