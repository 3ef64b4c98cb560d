"""Dash pages, components, themes and i18n of CityGrid's internal and public apps."""
