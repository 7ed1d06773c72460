# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Countries and regions for the catalog import: English country names to ISO 3166-1 alpha-2, codes to regions.

The community list of NTS servers gives a free-text ``location`` ("Germany", "Czech Republic", "UK", "All",
"Distro"); the catalog wants ISO 3166-1 alpha-2 ``countries`` and one of the catalog's ``region`` values
(:data:`catalog_schema.REGIONS`). Every officially assigned code has exactly one region here (the unit tests check
that against :data:`catalog_schema.ISO_3166_ALPHA2`). Conventions, matching the shipped catalog: Russia is in
``europe``; Central America and the Caribbean are ``north-america``; Turkey, Iran and the Arabian peninsula are
``middle-east``; uninhabited territories (Antarctica and the like) are ``global``.

Stdlib only, no Ansible imports.
"""

from __future__ import annotations

import re
import unicodedata

_REGION_CODES = {
    "africa": """AO BF BI BJ BW CD CF CG CI CM CV DJ DZ EG EH ER ET GA GH GM GN GQ GW KE KM LR LS LY MA MG ML MR MU
        MW MZ NA NE NG RE RW SC SD SH SL SN SO SS ST SZ TD TG TN TZ UG YT ZA ZM ZW""",
    "asia": """AF AM AZ BD BN BT CC CN CX GE HK ID IN IO JP KG KH KP KR KZ LA LK MM MN MO MV MY NP PH PK SG TH TJ
        TL TM TW UZ VN""",
    "europe": """AD AL AT AX BA BE BG BY CH CY CZ DE DK EE ES FI FO FR GB GG GI GR HR HU IE IM IS IT JE LI LT LU LV
        MC MD ME MK MT NL NO PL PT RO RS RU SE SI SJ SK SM UA VA""",
    "middle-east": "AE BH IL IQ IR JO KW LB OM PS QA SA SY TR YE",
    "north-america": """AG AI AW BB BL BM BQ BS BZ CA CR CU CW DM DO GD GL GP GT HN HT JM KN KY LC MF MQ MS MX NI
        PA PM PR SV SX TC TT US VC VG VI""",
    "oceania": "AS AU CK FJ FM GU KI MH MP NC NF NR NU NZ PF PG PN PW SB TK TO TV UM VU WF WS",
    "south-america": "AR BO BR CL CO EC FK GF GY PE PY SR UY VE",
    "global": "AQ BV GS HM TF",
}
REGION_OF = {code: region for region, codes in _REGION_CODES.items() for code in codes.split()}

# English short names and common variants (compared after folding: lower case, no accents, no punctuation).
_NAMES = """
AD andorra | AE united arab emirates, uae | AF afghanistan | AG antigua and barbuda | AI anguilla | AL albania
AM armenia | AO angola | AQ antarctica | AR argentina | AS american samoa | AT austria | AU australia | AW aruba
AX aland islands, aland | AZ azerbaijan | BA bosnia and herzegovina, bosnia | BB barbados | BD bangladesh
BE belgium | BF burkina faso | BG bulgaria | BH bahrain | BI burundi | BJ benin | BL saint barthelemy
BM bermuda | BN brunei, brunei darussalam | BO bolivia | BQ bonaire, caribbean netherlands | BR brazil, brasil
BS bahamas | BT bhutan | BV bouvet island | BW botswana | BY belarus | BZ belize | CA canada
CC cocos islands, cocos keeling islands | CD democratic republic of the congo, dr congo, congo kinshasa
CF central african republic | CG republic of the congo, congo, congo brazzaville | CH switzerland, schweiz, suisse
CI ivory coast, cote d ivoire, cote divoire | CK cook islands | CL chile | CM cameroon | CN china, prc | CO colombia
CR costa rica | CU cuba | CV cape verde, cabo verde | CW curacao | CX christmas island | CY cyprus
CZ czech republic, czechia | DE germany, deutschland | DJ djibouti | DK denmark | DM dominica
DO dominican republic | DZ algeria | EC ecuador | EE estonia | EG egypt | EH western sahara | ER eritrea
ES spain, espana | ET ethiopia | FI finland | FJ fiji | FK falkland islands | FM micronesia | FO faroe islands
FR france | GA gabon | GB united kingdom, uk, great britain, britain, england, scotland, wales, northern ireland
GD grenada | GE georgia | GF french guiana | GG guernsey | GH ghana | GI gibraltar | GL greenland | GM gambia
GN guinea | GP guadeloupe | GQ equatorial guinea | GR greece | GS south georgia | GT guatemala | GU guam
GW guinea bissau | GY guyana | HK hong kong | HM heard island and mcdonald islands | HN honduras | HR croatia
HT haiti | HU hungary | ID indonesia | IE ireland | IL israel | IM isle of man | IN india
IO british indian ocean territory | IQ iraq | IR iran | IS iceland | IT italy, italia | JE jersey | JM jamaica
JO jordan | JP japan | KE kenya | KG kyrgyzstan | KH cambodia | KI kiribati | KM comoros
KN saint kitts and nevis | KP north korea | KR south korea, korea, republic of korea | KW kuwait
KY cayman islands | KZ kazakhstan | LA laos | LB lebanon | LC saint lucia | LI liechtenstein | LK sri lanka
LR liberia | LS lesotho | LT lithuania | LU luxembourg | LV latvia | LY libya | MA morocco | MC monaco
MD moldova | ME montenegro | MF saint martin | MG madagascar | MH marshall islands
MK north macedonia, macedonia | ML mali | MM myanmar, burma | MN mongolia | MO macau, macao
MP northern mariana islands | MQ martinique | MR mauritania | MS montserrat | MT malta | MU mauritius
MV maldives | MW malawi | MX mexico | MY malaysia | MZ mozambique | NA namibia | NC new caledonia | NE niger
NF norfolk island | NG nigeria | NI nicaragua | NL netherlands, the netherlands, holland, nederland | NO norway
NP nepal | NR nauru | NU niue | NZ new zealand | OM oman | PA panama | PE peru | PF french polynesia
PG papua new guinea | PH philippines | PK pakistan | PL poland | PM saint pierre and miquelon | PN pitcairn
PR puerto rico | PS palestine | PT portugal | PW palau | PY paraguay | QA qatar | RE reunion | RO romania
RS serbia | RU russia, russian federation | RW rwanda | SA saudi arabia | SB solomon islands | SC seychelles
SD sudan | SE sweden, sverige | SG singapore | SH saint helena | SI slovenia | SJ svalbard and jan mayen
SK slovakia | SL sierra leone | SM san marino | SN senegal | SO somalia | SR suriname | SS south sudan
ST sao tome and principe | SV el salvador | SX sint maarten | SY syria | SZ eswatini, swaziland
TC turks and caicos islands | TD chad | TF french southern territories | TG togo | TH thailand | TJ tajikistan
TK tokelau | TL timor leste, east timor | TM turkmenistan | TN tunisia | TO tonga | TR turkey, turkiye
TT trinidad and tobago | TV tuvalu | TW taiwan | TZ tanzania | UA ukraine | UG uganda
UM united states minor outlying islands | US united states, united states of america, usa, america
UY uruguay | UZ uzbekistan | VA vatican, holy see, vatican city | VC saint vincent and the grenadines
VE venezuela | VG british virgin islands | VI us virgin islands, united states virgin islands | VN vietnam, viet nam
VU vanuatu | WF wallis and futuna | WS samoa | YE yemen | YT mayotte | ZA south africa | ZM zambia | ZW zimbabwe
"""


def fold(text: str) -> str:
    """Lower case, accents removed, punctuation to spaces, single spaces: 'Côte d Ivoire' -> 'cote d ivoire'."""
    text = unicodedata.normalize("NFKD", str(text))
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text).split())


def _name_table() -> dict[str, str]:
    table: dict[str, str] = {}
    for item in re.split(r"[|\n]", _NAMES):
        if not item.strip():
            continue
        code, _sep, names = item.strip().partition(" ")
        for name in names.split(","):
            table[fold(name)] = code
            if fold(name).startswith("the "):
                table[fold(name)[4:]] = code
    return table


COUNTRY_CODE = _name_table()

# Locations that name no country: the server is everywhere (anycast) or its place is not published.
GLOBAL_LOCATIONS = frozenset(("all", "global", "worldwide", "world", "anycast", "multiple", "various", "everywhere"))
# "Distro": the list's marker for servers meant for one distribution's systems (Ubuntu's).
DISTRO_LOCATIONS = frozenset(("distro", "distribution", "distro only", "distro use only"))


def country_code(name: str) -> str | None:
    """ISO 3166-1 alpha-2 code for an English country name or a code ('UK' -> 'GB'), or None when unknown."""
    key = fold(name)
    if key in COUNTRY_CODE:
        return COUNTRY_CODE[key]
    if len(key) == 2 and key.upper() in REGION_OF:
        return key.upper()
    return None
