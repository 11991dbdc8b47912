# data stage (see docs/design.md)
