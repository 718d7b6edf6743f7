"""Word lists for the task generator (cmat_jax.taskgen): invented people, places, teams and titles.

Plain data, no logic. The lists are written for this project: common given names and
surnames, real city, country and month names, and made-up titles built from ordinary
English words. None is taken from a benchmark's tables. `TINY_*` lists hold short
values for the tiny profile, whose prompts must stay a few dozen tokens long.
"""

FIRST_NAMES = (
    "Aaron", "Adele", "Ahmed", "Aino", "Alba", "Alec", "Alma", "Amara", "Anders", "Anita", "Arjun", "Astrid",
    "Beatriz", "Bruno", "Callum", "Camila", "Carmen", "Cedric", "Chiara", "Colin", "Dalia", "Damian",
    "Daniela", "Dario", "Declan", "Delia", "Desmond", "Dmitri", "Edgar", "Elena", "Elif", "Emeka", "Enzo",
    "Esther", "Farid", "Felix", "Fiona", "Florin", "Gareth", "Gemma", "Goran", "Greta", "Hamish", "Hana",
    "Hector", "Helga", "Hugo", "Ida", "Igor", "Imani", "Ines", "Ivan", "Jasper", "Jelena", "Joaquin",
    "Jonas", "Julian", "Kaito", "Karim", "Katya", "Kenji", "Kofi", "Lars", "Leila", "Lena", "Lionel",
    "Lorenzo", "Lucia", "Magnus", "Maia", "Malik", "Marco", "Marta", "Mateo", "Mira", "Nadia", "Nikolai",
    "Nils", "Noor", "Oskar", "Otto", "Pablo", "Petra", "Priya", "Rafael", "Rhys", "Rosa", "Ruben",
    "Sakura", "Samir", "Selma", "Silas", "Sofia", "Stefan", "Tamsin", "Teodor", "Tomas", "Ulla", "Vera",
    "Viktor", "Wanda", "Yara", "Yusuf", "Zora",
)  # fmt: skip

SURNAMES = (
    "Abara", "Almeida", "Andersen", "Arnaud", "Bakker", "Baranov", "Bellamy", "Bianchi", "Blackwood",
    "Brandt", "Calloway", "Castellano", "Chaudhry", "Costa", "Dalton", "Delacroix", "Dimitrov", "Dunmore",
    "Eriksen", "Esposito", "Falk", "Ferreira", "Fitzgerald", "Fontaine", "Galloway", "Gomez", "Greaves",
    "Haddad", "Halvorsen", "Hartley", "Hoffmann", "Ibarra", "Ivanova", "Jankowski", "Jensen", "Kaplan",
    "Kaur", "Kendrick", "Kowalczyk", "Lambert", "Lindqvist", "Lombardi", "Lund", "Mahony", "Marchetti",
    "Mendes", "Moreau", "Nakamura", "Novak", "Nwosu", "Oduya", "Okafor", "Olsen", "Ortega", "Pajari",
    "Pereira", "Petrov", "Quinlan", "Radu", "Ramirez", "Rasmussen", "Reyes", "Rossi", "Sandoval",
    "Santoro", "Schreiber", "Sokolov", "Strand", "Tanaka", "Thorne", "Torres", "Ulrich", "Valdez",
    "Varga", "Vasquez", "Virtanen", "Wainwright", "Weber", "Whitlock", "Yilmaz", "Zamora", "Zielinski",
)  # fmt: skip

CITIES = (
    "Aberdeen", "Albany", "Ashford", "Bergen", "Bilbao", "Bologna", "Bristol", "Brno", "Calgary", "Cardiff",
    "Coimbra", "Cork", "Dayton", "Dundee", "Durban", "Eindhoven", "Fresno", "Galway", "Ghent", "Granada",
    "Graz", "Halifax", "Hamilton", "Hobart", "Innsbruck", "Kaunas", "Kingston", "Leeds", "Leipzig",
    "Lille", "Linz", "Lyon", "Malmo", "Marseille", "Modesto", "Nantes", "Norwich", "Odense", "Oulu",
    "Plymouth", "Porto", "Quebec", "Reno", "Riga", "Rotterdam", "Salem", "Seville", "Spokane", "Tampere",
    "Toledo", "Tucson", "Turin", "Utrecht", "Valencia", "Verona", "Vilnius", "Windsor", "Wichita",
    "York", "Zagreb",
)  # fmt: skip

COUNTRIES = (
    "Argentina", "Australia", "Austria", "Belgium", "Brazil", "Canada", "Chile", "Colombia", "Croatia",
    "Czech Republic", "Denmark", "Egypt", "Estonia", "Finland", "France", "Germany", "Ghana", "Greece",
    "Hungary", "Iceland", "India", "Ireland", "Italy", "Jamaica", "Japan", "Kenya", "Latvia", "Mexico",
    "Morocco", "Netherlands", "New Zealand", "Nigeria", "Norway", "Peru", "Poland", "Portugal", "Romania",
    "Scotland", "Senegal", "Serbia", "Slovakia", "South Africa", "South Korea", "Spain", "Sweden",
    "Switzerland", "Turkey", "Ukraine", "Uruguay", "Wales",
)  # fmt: skip

US_STATES = (
    "Alabama", "Arizona", "Colorado", "Georgia", "Idaho", "Illinois", "Indiana", "Iowa", "Kansas",
    "Kentucky", "Maine", "Michigan", "Minnesota", "Missouri", "Montana", "Nebraska", "Nevada", "Ohio",
    "Oregon", "Tennessee", "Texas", "Utah", "Vermont", "Virginia", "Wisconsin",
)  # fmt: skip

MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
    "November", "December",
)  # fmt: skip

MASCOTS = (
    "Badgers", "Bears", "Bison", "Comets", "Cougars", "Falcons", "Foxes", "Hawks", "Hornets", "Huskies",
    "Jaguars", "Knights", "Lions", "Lynx", "Mariners", "Mustangs", "Owls", "Panthers", "Pilots", "Rams",
    "Ravens", "Rockets", "Sharks", "Stags", "Storm", "Thunder", "Tigers", "Titans", "Vikings", "Wolves",
)  # fmt: skip

CLUB_SUFFIXES = ("United", "City", "Athletic", "Rovers", "Town", "Wanderers", "Albion", "FC", "Sporting")

ADJECTIVES = (
    "Amber", "Ancient", "Blue", "Broken", "Burning", "Crimson", "Dark", "Distant", "Empty", "Endless",
    "Falling", "Frozen", "Gentle", "Golden", "Hidden", "Hollow", "Iron", "Last", "Lonely", "Lost",
    "Midnight", "Northern", "Paper", "Quiet", "Restless", "Rising", "Scarlet", "Secret", "Silent",
    "Silver", "Small", "Southern", "Stolen", "Strange", "Summer", "Velvet", "Wild", "Winter",
)  # fmt: skip

NOUNS = (
    "Anchor", "Arrow", "Bridge", "Canyon", "Castle", "Circle", "Coast", "Crown", "Dance", "Dream",
    "Echo", "Empire", "Field", "Fire", "Garden", "Harbor", "Heart", "Horizon", "Island", "Kingdom",
    "Lantern", "Light", "Machine", "Meadow", "Mirror", "Mountain", "Ocean", "Orchard", "Road", "River",
    "Shadow", "Signal", "Sky", "Storm", "Stranger", "Tide", "Tower", "Valley", "Voice", "Window",
)  # fmt: skip

SHIP_PREFIXES = ("HMS", "USS", "SS", "MV", "RMS")

SHIP_NAMES = (
    "Albatross", "Audacious", "Beacon", "Bellerophon", "Cormorant", "Defiance", "Dauntless", "Endeavour",
    "Fortitude", "Gannet", "Guardian", "Halcyon", "Indomitable", "Intrepid", "Kestrel", "Leviathan",
    "Majestic", "Meridian", "Nautilus", "Osprey", "Pelican", "Petrel", "Resolute", "Sentinel", "Sovereign",
    "Swiftsure", "Tenacious", "Triton", "Valiant", "Vigilant", "Warspite", "Zephyr",
)  # fmt: skip

SHIPYARDS = (
    "Harland Yard", "Clydebank Works", "Newport Shipbuilding", "Bath Iron Works", "Tyne Dockyard",
    "Portsmouth Dockyard", "Kiel Werft", "Gdansk Yard", "Belfast Yard", "Mare Island",
)  # fmt: skip

SHIP_FATES = ("Scrapped", "Sunk", "Decommissioned", "Museum ship", "Sold", "Wrecked", "In service")

PARTIES = ("Democratic", "Republican", "Liberal", "Conservative", "Labour", "Green", "Independent", "Reform")

ELECTION_RESULTS = ("Re-elected", "Retired", "Lost re-election", "Defeated", "Retired to run for Senate")

FILM_STUDIOS = (
    "Bluewater Pictures", "Crescent Films", "Granite Studios", "Harbor Light", "Lantern Media",
    "Northstar", "Redwood Pictures", "Silverline", "Summit Hall", "Twin Oaks Films",
)  # fmt: skip

GENRES = ("Drama", "Comedy", "Thriller", "Documentary", "Animation", "Western", "Horror", "Musical")

RECORD_LABELS = ("Arcadia", "Bright Sky", "Copperleaf", "Dune Records", "Echo Valley", "Foxglove", "Harmonia")

SCHOOL_KINDS = ("High School", "Academy", "Secondary School", "College", "Grammar School")

SCHOOL_TYPES = ("Public", "Private", "Charter", "Catholic")

SCHOOL_DIVISIONS = ("AA", "AAA", "AAAA", "B", "C")

FOOTBALL_POSITIONS = ("Goalkeeper", "Defender", "Midfielder", "Forward")

GRIDIRON_POSITIONS = ("Quarterback", "Running back", "Wide receiver", "Tight end", "Linebacker", "Cornerback",
                      "Safety", "Kicker")

COMPETITIONS = ("Friendly", "League", "Cup", "Qualifier", "Super Cup")

ROUNDS = ("Group stage", "Round of 16", "Quarter-final", "Semi-final", "Final", "First round",
          "Second round", "Third round")

VENUE_SIDES = ("H", "A", "N")

TV_NETWORKS = ("NBC", "CBS", "ABC", "FOX", "ESPN")

CIRCUIT_WORDS = ("Park", "Raceway", "Ring", "Speedway", "Circuit", "Motorsport Park")

SURFACES = ("Clay", "Hard", "Grass", "Carpet")

OUTCOMES = ("Winner", "Runner-up")

TOURNAMENT_WORDS = ("Open", "Classic", "Masters", "Championships", "Cup", "International")

MOUNTAIN_RANGES = ("Coastal Range", "High Ridge", "Eastern Alps", "Northern Sierra", "Granite Peaks",
                   "Red Hills", "Cloud Range")

STATION_CLASSES = ("A", "B", "C", "D")

STATION_FORMATS = ("Country", "News/Talk", "Classic rock", "Public radio", "Sports", "Christian", "Jazz")

BUILDING_USES = ("Office", "Residential", "Hotel", "Mixed use", "Government")

MEDAL_KINDS = ("Gold", "Silver", "Bronze")

# -- the tiny profile: one short word each ------------------------------------------------------------

TINY_NAMES = (
    "Ana", "Ben", "Cal", "Dev", "Eli", "Fay", "Gus", "Hal", "Ida", "Jo", "Kai", "Leo", "Max", "Ned", "Oda",
    "Pia", "Rex", "Sam", "Tom", "Uma", "Val", "Wes", "Zoe",
)  # fmt: skip

TINY_CITIES = ("Rome", "Oslo", "Lima", "Nice", "Bern", "Riga", "Kiev", "Oulu", "Lyon", "Bonn", "Cork", "Pisa")

TINY_COLORS = ("Red", "Blue", "Green", "Gold", "Gray")

TINY_TITLES = (
    "Echo", "Tide", "Dusk", "Ember", "Frost", "Haze", "Iris", "Jade", "Lark", "Mist", "Nova", "Opal",
    "Pike", "Rain", "Sage", "Vale", "Wren",
)  # fmt: skip

TINY_GENRES = ("Pop", "Rock", "Jazz", "Folk")

TINY_SHIPS = ("Ajax", "Argo", "Brig", "Cove", "Dart", "Finch", "Gale", "Hawk", "Kite", "Orca", "Puma", "Swan")
