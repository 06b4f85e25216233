"""Data: readers that turn an on-disk dataset into one table, splits, the image cache, transforms."""
