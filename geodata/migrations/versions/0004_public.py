"""Public views for the public app and Open311 (issue #8): the data version, and a scrubbed description.

* ``open_data.data_version``: the version every cache key carries (core.data_version, bumped by each ETL
  run), readable by the public role, which has no access to core.
* ``open_data.scrub_text(text)``: blanks what identifies a person in free text — 18- and 15-character
  ID numbers, Chinese mobile numbers (1[3-9] and 9 digits, with or without +86 and separators), landlines
  (area code and 7-8 digits), house numbers (``12号``, ``3号楼``, ``5单元``, ``201室``) and people named
  by surname and honorific (王先生 → 某先生).  Done in the database so the public role can never read
  the raw text; the app scrubs again with the same rules (geodata/open311.py) as a second line.
* ``open_data.case_description``: the scrubbed description of each case the public view shows (apart from
  ``case_public``, which by design carries no free text); read per page of Open311 answers by key.

Revision ID: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Order matters: the longest patterns first, so an ID number is not half-eaten as a phone number.
# PostgreSQL's regular expressions (ARE) support the look-behind used to keep digit runs whole.
SCRUB_FUNCTION_SQL = r"""
CREATE FUNCTION open_data.scrub_text(raw text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURNS NULL ON NULL INPUT AS $$
SELECT regexp_replace(regexp_replace(regexp_replace(regexp_replace(regexp_replace(regexp_replace(raw,
    '(?<![0-9])[0-9]{17}[0-9Xx](?![0-9A-Za-z])|(?<![0-9])[0-9]{15}(?![0-9])', '[证件号已隐去]', 'g'),
    '(?<![0-9])(\+?86[- ]?)?1[3-9][0-9]([- ]?[0-9]{4}){2}(?![0-9])', '[电话已隐去]', 'g'),
    '(?<![0-9])(\(?0[0-9]{2,3}\)?[- ]?)?[2-9][0-9]{6,7}(?![0-9])', '[电话已隐去]', 'g'),
    '[0-9０-９]+(-[0-9]+)?(号楼|号院|号|栋|幢|单元|室|层|楼)', '*\2', 'g'),
    '[一-龥](先生|女士|小姐|师傅|阿姨|大爷|大妈)', '某\1', 'g'),
    '\s+', ' ', 'g')
$$;
"""

def upgrade() -> None:
    """Add the data-version view, the scrub function and the scrubbed descriptions."""
    op.execute(SCRUB_FUNCTION_SQL)
    op.execute("""
        CREATE VIEW open_data.data_version AS SELECT version, updated_at FROM core.data_version;

        -- Only rows the public view shows (its policy is inherited, not restated), keyed like it.
        CREATE VIEW open_data.case_description AS
            SELECT p.case_number, p.reported_at, open_data.scrub_text(c.description) AS description
              FROM open_data.case_public p
              JOIN core.case_record c ON c.case_number = p.case_number AND c.reported_at = p.reported_at;

        REVOKE ALL ON FUNCTION open_data.scrub_text(text) FROM PUBLIC;
        GRANT EXECUTE ON FUNCTION open_data.scrub_text(text) TO citygrid_reader, citygrid_public;
        GRANT SELECT ON open_data.data_version, open_data.case_description TO citygrid_reader, citygrid_public;
    """)


def downgrade() -> None:
    """Back to 0003: the views and the function go."""
    op.execute("""
        DROP VIEW open_data.case_description;
        DROP VIEW open_data.data_version;
        DROP FUNCTION open_data.scrub_text(text);
    """)
