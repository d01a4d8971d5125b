from tests.integration.orthanc import orthanc  # noqa: F401  (session fixture)
