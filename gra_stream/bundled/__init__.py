"""Public data shipped with the package (see README.md here): decontamination references, a calibration source."""
