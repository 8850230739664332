"""Read, validate and write candidate catalogs.

A *candidate catalog* is any table that astropy can read (FITS, CSV, ECSV,
Parquet, VOTable, HDF5) with one sky position per row.  This subpackage

- reads it (:func:`~lsbg_classify.pipeline.catalog.read.read_catalog`),
  turning every I/O failure into a :class:`CatalogError` that names the
  file;
- finds the position columns by name (:func:`find_position_columns`);
- turns them into ICRS degrees and checks every row
  (:func:`extract_positions`);
- adds the classifier's results to a copy of the table
  (:func:`add_result_columns`);
- writes the result atomically (:func:`write_catalog`).

Modules: :mod:`~lsbg_classify.pipeline.catalog.read` (formats and reading),
:mod:`~lsbg_classify.pipeline.catalog.columns` (positions and result
columns), :mod:`~lsbg_classify.pipeline.catalog.write` (writing).

Conventions
-----------
Rows are numbered from 0, in table order, in every message.

Positions are returned in degrees (ICRS).  Column units are honoured
(``deg``, ``rad``, ``hourangle``, ``arcsec``, ...).  A numeric column
without a unit is taken to be in **degrees**, also when every RA value is
below 24: it never guesses hours from the values.  Strings are
parsed as numbers (same unit rule) or as sexagesimal angles with
`~astropy.coordinates.Angle`: RA strings such as ``"10:21:33.2"``,
``"10 21 33.2"`` or ``"10h21m33.2s"`` are **hours**, Dec strings such as
``"-05:12:00"`` or ``"-5d12m"`` are degrees, unless the column's unit says
otherwise or the string carries its own unit letters.
"""
