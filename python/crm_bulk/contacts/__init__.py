"""Single contacts through the API: validation, storage, listing with the filter language."""
