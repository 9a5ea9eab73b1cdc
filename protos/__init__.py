"""Wire contract (evtwin.v1): .proto files and their generated Python modules."""
