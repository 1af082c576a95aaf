"""Quantification of detected slumps: volumes and their uncertainty, yearly binning over thaw
seasons, climate series and the temperature response, carbon and regional totals."""
