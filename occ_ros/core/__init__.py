"""The floor of the house: named errors, configuration, the class table, frame sets and the one
occupancy volume type. Imports nothing else from occ_ros (only numpy / the standard library)."""
