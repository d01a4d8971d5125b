"""medimg DICOM gateway: a node a PACS can route studies to."""
