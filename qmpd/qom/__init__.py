"""QOM: types, objects, properties and the object tree."""
