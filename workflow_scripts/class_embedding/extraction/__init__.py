"""The class-embedding lens and the extraction of every layer's projections into Parquet tables
(``shards``), the one reader of those tables (``reader``), and the weight check."""
