"""The data formats lesion-pl reads, by name: one list, for the configuration's rule, the command line's help and
the readers (lesion_pl/data/sources: one reader each, tested to agree). No imports: the base install reads it."""

FORMATS = ("auto", "ham10000", "isic-csv", "isic2020", "csv", "folder", "dermamnist")  # auto: detected
